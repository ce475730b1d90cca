//! What one benchmark job runs: one model, one batch size, one prompt set, one decoding setup,
//! one engine configuration. This is the one description of a job: `tokbench sweep` and
//! `tokbench-worker bench` build it from the same flags (the `args` module), the proto carries it as
//! JSON, the coordinator stores it, the worker runs it, and the report records it. Its validation
//! lives here, so every entry point refuses the same mistake with the same message.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WeightsMode {
    /// Real weights from a local directory or the Hugging Face cache, downloaded from the Hub
    /// when missing and online; else synthetic.
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

/// One benchmark job. Fields missing from its JSON take their [`Default`] values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
    /// No network access for this job: weights come only from the Hugging Face cache or a local
    /// directory, never downloaded (as with HF_HUB_OFFLINE=1 on the worker).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offline: bool,
    /// Set for an online-serving job (`tokbench sweep --mode serve`): the worker loads no model
    /// and drives this OpenAI-compatible endpoint instead; the offline fields above are then
    /// unused. Absent (None) for offline jobs, so offline workloads' JSON is unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve: Option<crate::serve::ServeSpec>,
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
            offline: false,
            serve: None,
        }
    }
}

pub const MAX_BATCH_SIZE: usize = 1024;
pub const MAX_PROMPTS: usize = 4096;
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;
pub const MAX_MAX_TOKENS: usize = 8192;
pub const MAX_REPETITIONS: usize = 100;
pub const MAX_WARMUP: usize = 100;
pub const MAX_MODEL_NAME_CHARS: usize = 200;
pub const MAX_INPUT_LEN: usize = 8192;
/// The control characters a prompt may hold: newline, tab, and carriage return (a JSONL prompt
/// file may carry Windows line ends inside a prompt).
pub const PROMPT_CONTROL_CHARS: [char; 3] = ['\n', '\t', '\r'];

pub use crate::workload_error::WorkloadError;

impl Workload {
    /// Parses a workload from its JSON (the form the proto carries and `--workload-file` holds);
    /// missing fields take their defaults. Errors name the field at fault, e.g.
    /// "dtype: unknown variant `int4`, expected one of `f32`, `f16`, `bf16`". Not validated: see
    /// [`Workload::validate`].
    pub fn from_json(text: &str) -> Result<Workload, WorkloadError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            WorkloadError(if path == "." { inner.to_string() } else { format!("{path}: {inner}") })
        })
    }
}

pub(crate) use crate::workload_error::refuse;

/// Marks a model name as a directory on the worker (`local:/models/llama`). Without it a
/// submitted name may not be an absolute path nor hold a `..` component (see
/// [`validate_submitted_model_name`]); with it the worker still loads the directory only from
/// under its `--models-dir`.
pub const LOCAL_MODEL_PREFIX: &str = "local:";

/// The first control character of `text` (NUL, ESC, DEL, ...) that `allowed` does not let
/// through, with its character index.
fn control_char(text: &str, allowed: &[char]) -> Option<(usize, char)> {
    text.chars().enumerate().find(|(_, c)| c.is_control() && !allowed.contains(c))
}

/// Model names travel to workers that resolve them as catalog names, HF repo ids or local
/// directories; this character set covers all three and keeps shell/SQL/path tricks out.
/// A `local:` prefix ([`LOCAL_MODEL_PREFIX`]) marks a worker-local directory.
pub fn validate_model_name(name: &str) -> Result<(), WorkloadError> {
    if name.is_empty() {
        return refuse("a model name is empty: give catalog names (e.g. tiny-opt, opt-125m), HF repo ids or worker-local paths".into());
    }
    if let Some((i, c)) = control_char(name, &[]) {
        return refuse(format!(
            "model name {name:?} contains the control character {c:?} at character {i}; model names are catalog names, HF repo ids or paths: remove it"
        ));
    }
    if name.chars().count() > MAX_MODEL_NAME_CHARS {
        return refuse(format!(
            "model name \"{}...\" is {} characters; the limit is {MAX_MODEL_NAME_CHARS}",
            name.chars().take(40).collect::<String>(),
            name.chars().count()
        ));
    }
    let path = match name.strip_prefix(LOCAL_MODEL_PREFIX) {
        Some("") => return refuse(format!("model name \"{name}\" names no directory: write {LOCAL_MODEL_PREFIX}/path/to/model")),
        Some(path) => path,
        None => name,
    };
    if let Some(bad) = path.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))) {
        return refuse(format!(
            "model name \"{name}\" contains {bad:?}; only letters, digits and . _ / - are allowed (after an optional {LOCAL_MODEL_PREFIX} prefix)"
        ));
    }
    Ok(())
}

/// The stricter rule for model names a client submits to the coordinator (on top of
/// [`validate_model_name`]): an absolute path or a `..` component names a place on the worker's
/// disk, so it must be marked worker-local with [`LOCAL_MODEL_PREFIX`]. (`tokbench-worker bench`,
/// run by the user on their own machine, takes any local path.)
pub fn validate_submitted_model_name(name: &str) -> Result<(), WorkloadError> {
    validate_model_name(name)?;
    if name.starts_with(LOCAL_MODEL_PREFIX) {
        return Ok(());
    }
    let what = if name.starts_with('/') {
        "is an absolute path"
    } else if name.split('/').any(|part| part == "..") {
        "contains a \"..\" component"
    } else {
        return Ok(());
    };
    refuse(format!(
        "model name \"{name}\" {what}: submitted models are catalog names (e.g. tiny-opt), Hugging Face repo ids (owner/name) or worker-local directories marked as such. To load a directory on the worker, write {LOCAL_MODEL_PREFIX}{name} (the worker loads it only from under its --models-dir)"
    ))
}

impl Sampling {
    pub fn validate(&self) -> Result<(), WorkloadError> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return refuse(format!("temperature {} is invalid: use 0 (greedy) or a positive number", self.temperature));
        }
        if let Some(tp) = self.top_p {
            if !(tp > 0.0 && tp <= 1.0) {
                return refuse(format!("top_p {tp} is invalid: use a value in (0, 1], e.g. 0.95"));
            }
        }
        if self.top_k == Some(0) {
            return refuse("top_k 0 is invalid: use 1 or more, or leave it unset".into());
        }
        Ok(())
    }
}

impl PromptSource {
    pub fn validate(&self) -> Result<(), WorkloadError> {
        let n = self.num_prompts();
        if n == 0 {
            return refuse("there must be at least one prompt (--num-prompts N or --prompts FILE)".into());
        }
        if n > MAX_PROMPTS {
            return refuse(format!("{n} prompts given; the limit is {MAX_PROMPTS}"));
        }
        match self {
            PromptSource::Inline { prompts } => {
                for (i, p) in prompts.iter().enumerate() {
                    if p.len() > MAX_PROMPT_BYTES {
                        return refuse(format!("prompt {i} is {} bytes; the limit is {MAX_PROMPT_BYTES} bytes (64 KiB)", p.len()));
                    }
                    if p.trim().is_empty() {
                        return refuse(format!("prompt {i} is empty; remove empty lines from the prompt file"));
                    }
                    if let Some((at, c)) = control_char(p, &PROMPT_CONTROL_CHARS) {
                        return refuse(format!(
                            "prompt {i} contains the control character {c:?} at character {at}; prompts may hold newlines and tabs but no other control characters (NUL included): remove it"
                        ));
                    }
                }
            }
            PromptSource::Synthetic { input_len, .. } => {
                if !(1..=MAX_INPUT_LEN).contains(input_len) {
                    return refuse(format!("input_len {input_len} is out of range: use 1..={MAX_INPUT_LEN} tokens"));
                }
            }
            PromptSource::Builtin { .. } => {}
        }
        Ok(())
    }
}

impl Workload {
    /// Every limit a job must meet before it is queued or run.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        validate_model_name(&self.model)?;
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return refuse(format!("batch size {} is out of range: use 1..={MAX_BATCH_SIZE}", self.batch_size));
        }
        self.prompts.validate()?;
        if !(1..=MAX_MAX_TOKENS).contains(&self.max_tokens) {
            return refuse(format!("max_tokens {} is out of range: use 1..={MAX_MAX_TOKENS}", self.max_tokens));
        }
        if !(1..=MAX_REPETITIONS).contains(&self.repetitions) {
            return refuse(format!("repetitions {} is out of range: use 1..={MAX_REPETITIONS}", self.repetitions));
        }
        if self.warmup > MAX_WARMUP {
            return refuse(format!("warmup {} is out of range: use 0..={MAX_WARMUP}", self.warmup));
        }
        self.sampling.validate()?;
        self.kernels.validate().map_err(WorkloadError)?;
        if let Some(cap) = self.kernels.compute_cap.filter(|_| self.effective_dtype() == DTypeSpec::Bf16 && !self.kernels.bf16_supported()) {
            return refuse(format!(
                "bf16 with the compute {}.{} kernels (kernel compute_cap {cap}): they have no bf16, which needs 8.0; use --dtype f16, or a kernel compute capability of 80 or more, or leave it unset",
                cap / 10,
                cap % 10
            ));
        }
        if let Some(serve) = &self.serve {
            serve.validate()?;
        }
        Ok(())
    }

    /// Offline (the worker runs the model) or serve (the worker drives an endpoint).
    pub fn mode(&self) -> crate::serve::JobMode {
        if self.serve.is_some() {
            crate::serve::JobMode::Serve
        } else {
            crate::serve::JobMode::Offline
        }
    }

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

#[cfg(test)]
mod json_tests {
    use super::*;

    #[test]
    fn from_json_names_the_field_at_fault_and_fills_defaults() {
        let err = Workload::from_json(r#"{"dtype":"int4"}"#).unwrap_err().to_string();
        assert!(err.starts_with("dtype: unknown variant `int4`") && err.contains("bf16"), "{err}");
        let err = Workload::from_json(r#"{"sampling":{"top_k":"many"}}"#).unwrap_err().to_string();
        assert!(err.starts_with("sampling.top_k:"), "{err}");
        let w = Workload::from_json(r#"{"model":"gpt2","max_tokens":7}"#).unwrap();
        assert_eq!((w.model.as_str(), w.max_tokens, w.repetitions), ("gpt2", 7, Workload::default().repetitions));
        assert!(Workload::from_json("not json").is_err());
    }

    #[test]
    fn bf16_with_forced_turing_kernels_is_refused_before_loading() {
        let turing = crate::KernelOptions { compute_cap: Some(75), ..Default::default() };
        let w = Workload { device: DeviceSpec::Cuda(0), dtype: Some(DTypeSpec::Bf16), kernels: turing, ..Workload::default() };
        let err = w.validate().unwrap_err().to_string();
        assert!(err.contains("compute 7.5 kernels") && err.contains("--dtype f16"), "{err}");
        assert!(Workload { dtype: Some(DTypeSpec::F16), ..w.clone() }.validate().is_ok());
        let ampere = crate::KernelOptions { compute_cap: Some(80), ..Default::default() };
        assert!(Workload { kernels: ampere, ..w }.validate().is_ok());
    }
}
