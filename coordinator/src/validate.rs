//! SubmitSweep validation and expansion: a `SweepSpec` becomes one `tokbench_core::Workload`
//! per (model, batch size). Every refusal names the field, the limit and what to change.

use serde::{Deserialize, Serialize};
use tokbench_core::catalog::estimate_parameters;
use tokbench_core::{Catalog, DTypeSpec, DeviceSpec, PromptSource, Sampling, WeightsMode, Workload};
use tokbench_proto::v1::{SamplingParams, SweepSpec};

pub const MAX_MODELS: usize = 64;
pub const MAX_BATCH_SIZES: usize = 16;
pub const MAX_BATCH_SIZE: u32 = 1024;
pub const MAX_PROMPTS: usize = 4096;
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;
pub const MAX_MAX_TOKENS: u32 = 8192;
pub const MAX_REPETITIONS: u32 = 100;
pub const MAX_WARMUP: u32 = 100;
pub const MAX_MODEL_NAME_CHARS: usize = 200;
pub const MAX_LABEL_CHARS: usize = 200;
pub const MAX_INPUT_LEN: u32 = 8192;

/// One job of a validated sweep.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub model: String,
    pub batch_size: u32,
    pub workload: Workload,
    /// Catalog estimate (0 = not in the catalog: unknown).
    pub est_parameters: u64,
    /// Bytes per parameter of the requested dtype (0 = left to the worker).
    pub dtype_bytes: u32,
}

#[derive(Debug, Clone)]
pub struct ValidSweep {
    pub spec: StoredSpec,
    pub backend: String,
    pub profile: bool,
    pub jobs: Vec<JobSpec>,
}

/// The SweepSpec as stored in `sweeps.spec_json` (the proto message has no serde).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StoredSpec {
    pub models: Vec<String>,
    pub batch_sizes: Vec<u32>,
    pub weights: String,
    pub dtype: String,
    pub num_prompts: u32,
    pub prompts: Vec<String>,
    pub input_len: u32,
    pub max_tokens: u32,
    pub repetitions: u32,
    pub warmup: u32,
    pub stop_at_eos: bool,
    pub sampling: Option<StoredSampling>,
    pub profile: bool,
    pub weights_seed: u64,
    pub label: String,
    pub backend: String,
    #[serde(default)]
    pub reuse_model: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StoredSampling {
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
    pub seed: u64,
}

impl From<&SweepSpec> for StoredSpec {
    fn from(s: &SweepSpec) -> Self {
        StoredSpec {
            models: s.models.clone(),
            batch_sizes: s.batch_sizes.clone(),
            weights: s.weights.clone(),
            dtype: s.dtype.clone(),
            num_prompts: s.num_prompts,
            prompts: s.prompts.clone(),
            input_len: s.input_len,
            max_tokens: s.max_tokens,
            repetitions: s.repetitions,
            warmup: s.warmup,
            stop_at_eos: s.stop_at_eos,
            sampling: s.sampling.as_ref().map(|p| StoredSampling { temperature: p.temperature, top_p: p.top_p, top_k: p.top_k, seed: p.seed }),
            profile: s.profile,
            weights_seed: s.weights_seed,
            label: s.label.clone(),
            backend: s.backend.clone(),
            reuse_model: s.reuse_model,
        }
    }
}

impl From<StoredSpec> for SweepSpec {
    fn from(s: StoredSpec) -> Self {
        SweepSpec {
            models: s.models,
            batch_sizes: s.batch_sizes,
            weights: s.weights,
            dtype: s.dtype,
            num_prompts: s.num_prompts,
            prompts: s.prompts,
            input_len: s.input_len,
            max_tokens: s.max_tokens,
            repetitions: s.repetitions,
            warmup: s.warmup,
            stop_at_eos: s.stop_at_eos,
            sampling: s.sampling.map(|p| SamplingParams { temperature: p.temperature, top_p: p.top_p, top_k: p.top_k, seed: p.seed }),
            profile: s.profile,
            weights_seed: s.weights_seed,
            label: s.label,
            backend: s.backend,
            reuse_model: s.reuse_model,
        }
    }
}

/// Model names travel to workers that resolve them as catalog names, HF repo ids or local
/// directories; this character set covers all three and keeps shell/SQL/path tricks out.
pub fn validate_model_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a model name is empty: give catalog names (e.g. tiny-opt, opt-125m), HF repo ids or worker-local paths".into());
    }
    if name.chars().count() > MAX_MODEL_NAME_CHARS {
        return Err(format!("model name \"{}...\" is {} characters; the limit is {MAX_MODEL_NAME_CHARS}", name.chars().take(40).collect::<String>(), name.chars().count()));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))) {
        return Err(format!("model name \"{name}\" contains {bad:?}; only letters, digits and . _ / - are allowed"));
    }
    Ok(())
}

/// Checks every limit and expands the sweep into jobs (models-major order).
pub fn validate_sweep(spec: &SweepSpec) -> Result<ValidSweep, String> {
    if spec.models.is_empty() {
        return Err(format!("no models: list at least one model (e.g. tiny-opt). Known models: {}", Catalog::names().join(", ")));
    }
    if spec.models.len() > MAX_MODELS {
        return Err(format!("{} models given; a sweep takes at most {MAX_MODELS}: split it into several sweeps", spec.models.len()));
    }
    for (i, m) in spec.models.iter().enumerate() {
        validate_model_name(m)?;
        if spec.models[..i].contains(m) {
            return Err(format!("model \"{m}\" is listed twice; list each model once"));
        }
    }
    let batch_sizes: Vec<u32> = if spec.batch_sizes.is_empty() { vec![4] } else { spec.batch_sizes.clone() };
    if batch_sizes.len() > MAX_BATCH_SIZES {
        return Err(format!("{} batch sizes given; a sweep takes at most {MAX_BATCH_SIZES}", batch_sizes.len()));
    }
    for (i, &b) in batch_sizes.iter().enumerate() {
        if !(1..=MAX_BATCH_SIZE).contains(&b) {
            return Err(format!("batch size {b} is out of range: use 1..={MAX_BATCH_SIZE}"));
        }
        if batch_sizes[..i].contains(&b) {
            return Err(format!("batch size {b} is listed twice; list each batch size once"));
        }
    }
    let weights: WeightsMode = if spec.weights.is_empty() { WeightsMode::Auto } else { spec.weights.parse().map_err(|e| format!("{e}"))? };
    let dtype: Option<DTypeSpec> = if spec.dtype.is_empty() { None } else { Some(spec.dtype.parse().map_err(|e| format!("{e}"))?) };
    let backend = spec.backend.trim().to_ascii_lowercase();
    if !matches!(backend.as_str(), "" | "cpu" | "cuda") {
        return Err(format!("bad backend \"{}\": use cpu, cuda, or leave it empty for any worker", spec.backend));
    }
    if spec.prompts.len() > MAX_PROMPTS {
        return Err(format!("{} prompts given; the limit is {MAX_PROMPTS}", spec.prompts.len()));
    }
    for (i, p) in spec.prompts.iter().enumerate() {
        if p.len() > MAX_PROMPT_BYTES {
            return Err(format!("prompt {i} is {} bytes; the limit is {MAX_PROMPT_BYTES} bytes (64 KiB)", p.len()));
        }
        if p.trim().is_empty() {
            return Err(format!("prompt {i} is empty; remove empty lines from the prompt file"));
        }
    }
    if spec.num_prompts as usize > MAX_PROMPTS {
        return Err(format!("num_prompts {} is over the limit of {MAX_PROMPTS}", spec.num_prompts));
    }
    if spec.input_len > MAX_INPUT_LEN {
        return Err(format!("input_len {} is over the limit of {MAX_INPUT_LEN} tokens", spec.input_len));
    }
    if spec.input_len > 0 && !spec.prompts.is_empty() {
        return Err("both inline prompts and input_len were given; use a prompt file or synthetic prompts of input_len tokens, not both".into());
    }
    // proto3 cannot tell "unset" from 0: 0 means the Workload default (128 tokens, 3 repetitions).
    let defaults = Workload::default();
    let max_tokens = if spec.max_tokens == 0 { defaults.max_tokens as u32 } else { spec.max_tokens };
    if max_tokens > MAX_MAX_TOKENS {
        return Err(format!("max_tokens {max_tokens} is out of range: use 1..={MAX_MAX_TOKENS}"));
    }
    let repetitions = if spec.repetitions == 0 { defaults.repetitions as u32 } else { spec.repetitions };
    if repetitions > MAX_REPETITIONS {
        return Err(format!("repetitions {repetitions} is out of range: use 1..={MAX_REPETITIONS}"));
    }
    if spec.warmup > MAX_WARMUP {
        return Err(format!("warmup {} is out of range: use 0..={MAX_WARMUP}", spec.warmup));
    }
    let sampling = match &spec.sampling {
        None => Sampling::default(),
        Some(p) => {
            if !p.temperature.is_finite() || p.temperature < 0.0 {
                return Err(format!("temperature {} is invalid: use 0 (greedy) or a positive number", p.temperature));
            }
            if let Some(tp) = p.top_p {
                if !(tp > 0.0 && tp <= 1.0) {
                    return Err(format!("top_p {tp} is invalid: use a value in (0, 1]"));
                }
            }
            if p.top_k == Some(0) {
                return Err("top_k 0 is invalid: use 1 or more, or leave it unset".into());
            }
            Sampling { temperature: p.temperature, top_p: p.top_p, top_k: p.top_k.map(|k| k as usize), seed: p.seed }
        }
    };
    if spec.label.chars().count() > MAX_LABEL_CHARS {
        return Err(format!("label is {} characters; the limit is {MAX_LABEL_CHARS}", spec.label.chars().count()));
    }
    let dtype_bytes = match dtype {
        None => 0,
        Some(DTypeSpec::F32) => 4,
        Some(DTypeSpec::F16 | DTypeSpec::Bf16) => 2,
    };

    let mut jobs = Vec::with_capacity(spec.models.len() * batch_sizes.len());
    for model in &spec.models {
        let est_parameters = Catalog::get(model).map(|e| estimate_parameters(&e.config())).unwrap_or(0);
        for &b in &batch_sizes {
            let prompts = if !spec.prompts.is_empty() {
                PromptSource::Inline { prompts: spec.prompts.clone() }
            } else {
                let n = if spec.num_prompts == 0 { b as usize } else { spec.num_prompts as usize };
                if spec.input_len > 0 {
                    PromptSource::Synthetic { num_prompts: n, input_len: spec.input_len as usize }
                } else {
                    PromptSource::Builtin { num_prompts: n }
                }
            };
            let workload = Workload {
                model: model.clone(),
                weights,
                // Placeholder: each worker puts its own device here before running.
                device: DeviceSpec::Cpu,
                dtype,
                batch_size: b as usize,
                prompts,
                max_tokens: max_tokens as usize,
                ignore_eos: !spec.stop_at_eos,
                sampling: sampling.clone(),
                warmup: spec.warmup as usize,
                repetitions: repetitions as usize,
                weights_seed: spec.weights_seed,
                reuse_model: spec.reuse_model,
                kernels: Default::default(),
            };
            jobs.push(JobSpec { model: model.clone(), batch_size: b, workload, est_parameters, dtype_bytes });
        }
    }
    Ok(ValidSweep { spec: StoredSpec::from(spec), backend, profile: spec.profile, jobs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SweepSpec {
        SweepSpec { models: vec!["tiny-opt".into(), "tiny-gpt2".into()], batch_sizes: vec![1, 2], max_tokens: 4, repetitions: 1, ..Default::default() }
    }

    #[test]
    fn expands_models_times_batch_sizes() {
        let v = validate_sweep(&spec()).unwrap();
        let got: Vec<(String, u32)> = v.jobs.iter().map(|j| (j.model.clone(), j.batch_size)).collect();
        assert_eq!(got, vec![("tiny-opt".into(), 1), ("tiny-opt".into(), 2), ("tiny-gpt2".into(), 1), ("tiny-gpt2".into(), 2)]);
        assert_eq!(v.jobs[1].workload.prompts, PromptSource::Builtin { num_prompts: 2 });
        assert!(v.jobs[0].est_parameters > 0);
    }

    #[test]
    fn refuses_out_of_range_values_with_the_limit() {
        let cases: Vec<(SweepSpec, &str)> = vec![
            (SweepSpec { models: vec![], ..spec() }, "no models"),
            (SweepSpec { batch_sizes: vec![0], ..spec() }, "1..=1024"),
            (SweepSpec { batch_sizes: vec![2000], ..spec() }, "1..=1024"),
            (SweepSpec { max_tokens: 9000, ..spec() }, "1..=8192"),
            (SweepSpec { repetitions: 101, ..spec() }, "1..=100"),
            (SweepSpec { models: vec!["opt;rm -rf".into()], ..spec() }, "only letters"),
            (SweepSpec { models: vec!["m".repeat(201)], ..spec() }, "limit is 200"),
            (SweepSpec { models: (0..65).map(|i| format!("m{i}")).collect(), ..spec() }, "at most 64"),
            (SweepSpec { batch_sizes: (1..=17).collect(), ..spec() }, "at most 16"),
            (SweepSpec { prompts: vec!["x".repeat(65 * 1024)], ..spec() }, "64 KiB"),
            (SweepSpec { prompts: vec!["p".into(); 4097], ..spec() }, "4096"),
            (SweepSpec { weights: "fake".into(), ..spec() }, "weights mode"),
            (SweepSpec { dtype: "int8".into(), ..spec() }, "dtype"),
            (SweepSpec { backend: "tpu".into(), ..spec() }, "backend"),
        ];
        for (s, needle) in cases {
            let err = validate_sweep(&s).unwrap_err();
            assert!(err.contains(needle), "expected {needle:?} in {err:?}");
        }
    }
}
