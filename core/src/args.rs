//! The flags that describe a [`Workload`], shared by `tokbench sweep` and `tokbench-worker bench`
//! (clap, behind the `cli` feature), so both take the same spelling and build the job the same
//! way. Unset flags keep the entry point's defaults (the `base` workload).

use crate::kernel_options::DecodePath;
use crate::workload::{ParseSpecError, WorkloadError};
use crate::{DTypeSpec, PromptSource, WeightsMode, Workload};
use std::path::PathBuf;

fn parse_spec<T: std::str::FromStr<Err = ParseSpecError>>(s: &str) -> Result<T, String> {
    s.parse().map_err(|e: ParseSpecError| e.to_string())
}

/// Per-job engine options (see [`crate::KernelOptions`]); CUDA only, ignored on the CPU.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Engine options (CUDA)")]
pub struct KernelArgs {
    /// How decode steps run: graph (fused kernels replayed as a CUDA graph), fused, or eager
    /// (candle's ops) [default: graph].
    #[arg(long, value_name = "PATH", value_parser = |s: &str| s.parse::<DecodePath>())]
    pub decode: Option<DecodePath>,
    /// Programmatic dependent launch between decode kernels (Hopper and newer) [default: true].
    #[arg(long, value_name = "BOOL")]
    pub pdl: Option<bool>,
    /// Rows up to which the few-row GEMV replaces cuBLAS in decode; 0 = cuBLAS only [default: 1].
    #[arg(long, value_name = "ROWS")]
    pub gemv_max_rows: Option<usize>,
    /// The prompt's attention as one fused kernel [default: true].
    #[arg(long, value_name = "BOOL")]
    pub fused_prefill_attention: Option<bool>,
    /// Prefill GEMMs with bias/activation/residual in cuBLASLt's epilogue [default: true].
    #[arg(long, value_name = "BOOL")]
    pub lt_epilogue: Option<bool>,
    /// Run tokbench's kernels as built for this compute capability (75, 80 or 90) on a newer GPU,
    /// to check an older GPU's code paths [default: the GPU's own].
    #[arg(long, value_name = "CAP")]
    pub kernel_compute_cap: Option<u32>,
    /// The rotary families' fused prefill kernels (grouped-query attention, SwiGLU) [default: true].
    #[arg(long, value_name = "BOOL")]
    pub fused_rotary_prefill: Option<bool>,
}

/// Everything about a job but its model, batch size and device (which `bench` and `sweep` take
/// in their own ways).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WorkloadArgs {
    /// auto (real weights from the Hugging Face cache or a local directory, downloaded from the
    /// Hub when missing and online, else synthetic), real (the same, but an error instead of
    /// synthetic) or synthetic (no network) [default: auto].
    #[arg(long, value_parser = parse_spec::<WeightsMode>)]
    pub weights: Option<WeightsMode>,
    /// Never touch the network: weights only from the Hugging Face cache or a local directory
    /// (HF_HUB_OFFLINE=1 on the worker means the same).
    #[arg(long)]
    pub offline: bool,
    /// Seed of synthetic weights [default: 0].
    #[arg(long)]
    pub weights_seed: Option<u64>,
    /// f32, f16 or bf16 [default: f16 on CUDA, f32 on CPU].
    #[arg(long, value_parser = parse_spec::<DTypeSpec>)]
    pub dtype: Option<DTypeSpec>,
    /// Prompt file: UTF-8, one prompt per line, empty lines skipped.
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// Number of prompts: the built-in set cycled, or synthetic prompts with --input-len.
    #[arg(long, conflicts_with = "prompts")]
    pub num_prompts: Option<usize>,
    /// Synthetic prompts of exactly this many tokens (vLLM-style) instead of the built-in set.
    #[arg(long, value_name = "TOKENS", conflicts_with = "prompts")]
    pub input_len: Option<usize>,
    /// New tokens per prompt.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Timed passes over all prompts; results are medians over them.
    #[arg(long)]
    pub repetitions: Option<usize>,
    /// Untimed passes before the timed ones.
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Stop a request at end-of-sequence instead of always generating --max-tokens.
    #[arg(long)]
    pub stop_at_eos: bool,
    /// Sampling temperature; 0 = greedy [default: 0].
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Nucleus sampling probability mass, in (0, 1].
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Sample among the k most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sampling seed [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub kernels: KernelArgs,
}

impl WorkloadArgs {
    /// `base` with every given flag applied; reads the prompt file. Not validated: call
    /// [`Workload::validate`] (or [`crate::SweepPlan::jobs`]) on the result.
    pub fn apply(&self, base: Workload) -> Result<Workload, WorkloadError> {
        let mut w = base;
        if let Some(v) = self.weights {
            w.weights = v;
        }
        if self.offline {
            w.offline = true;
        }
        if let Some(v) = self.weights_seed {
            w.weights_seed = v;
        }
        if self.dtype.is_some() {
            w.dtype = self.dtype;
        }
        if let Some(path) = &self.prompts {
            let bytes = std::fs::read(path).map_err(|e| {
                WorkloadError(format!("cannot read the prompt file {}: {e}. Give a UTF-8 text file with one prompt per line", path.display()))
            })?;
            let prompts = crate::prompt_file::parse_prompt_file(&bytes)
                .map_err(|e| WorkloadError(format!("prompt file {}: {e}", path.display())))?;
            w.prompts = PromptSource::Inline { prompts };
        } else {
            let (num, len) = match &w.prompts {
                PromptSource::Builtin { num_prompts } => (*num_prompts, None),
                PromptSource::Synthetic { num_prompts, input_len } => (*num_prompts, Some(*input_len)),
                PromptSource::Inline { prompts } => (prompts.len(), None),
            };
            let num_prompts = self.num_prompts.unwrap_or(num);
            w.prompts = match self.input_len.or(len) {
                // --input-len 0: the built-in prompt set.
                Some(0) | None => PromptSource::Builtin { num_prompts },
                Some(input_len) => PromptSource::Synthetic { num_prompts, input_len },
            };
        }
        if let Some(v) = self.max_tokens {
            w.max_tokens = v;
        }
        if let Some(v) = self.repetitions {
            w.repetitions = v;
        }
        if let Some(v) = self.warmup {
            w.warmup = v;
        }
        if self.stop_at_eos {
            w.ignore_eos = false;
        }
        if let Some(v) = self.temperature {
            w.sampling.temperature = v;
        }
        if self.top_p.is_some() {
            w.sampling.top_p = self.top_p;
        }
        if self.top_k.is_some() {
            w.sampling.top_k = self.top_k;
        }
        if let Some(v) = self.seed {
            w.sampling.seed = v;
        }
        let k = &self.kernels;
        if let Some(v) = k.decode {
            w.kernels.decode = v;
        }
        if let Some(v) = k.pdl {
            w.kernels.pdl = v;
        }
        if let Some(v) = k.gemv_max_rows {
            w.kernels.gemv_max_rows = v;
        }
        if let Some(v) = k.fused_prefill_attention {
            w.kernels.fused_prefill_attention = v;
        }
        if let Some(v) = k.lt_epilogue {
            w.kernels.lt_epilogue = v;
        }
        if let Some(v) = k.kernel_compute_cap {
            w.kernels.compute_cap = Some(v);
        }
        if let Some(v) = k.fused_rotary_prefill {
            w.kernels.fused_rotary_prefill = v;
        }
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        w: WorkloadArgs,
    }

    #[test]
    fn flags_apply_over_the_entry_points_defaults() {
        let base = Workload { max_tokens: 32, prompts: PromptSource::Synthetic { num_prompts: 4, input_len: 32 }, ..Workload::default() };
        let cmd = Cmd::parse_from(["x", "--max-tokens", "8", "--num-prompts", "6", "--decode", "eager", "--pdl", "false", "--dtype", "bf16"]);
        let w = cmd.w.apply(base.clone()).unwrap();
        assert_eq!(w.max_tokens, 8);
        assert_eq!(w.prompts, PromptSource::Synthetic { num_prompts: 6, input_len: 32 });
        assert_eq!(w.kernels.decode, DecodePath::Eager);
        assert!(!w.kernels.pdl);
        assert_eq!(w.dtype, Some(DTypeSpec::Bf16));
        assert_eq!(w.repetitions, base.repetitions);
        let builtin = Cmd::parse_from(["x", "--input-len", "0"]).w.apply(base).unwrap();
        assert_eq!(builtin.prompts, PromptSource::Builtin { num_prompts: 4 });
    }

    #[test]
    fn prompt_file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("tokbench-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.txt");
        std::fs::write(&empty, "\n  \n").unwrap();
        let err = Cmd::parse_from(["x", "--prompts", empty.to_str().unwrap()]).w.apply(Workload::default()).unwrap_err().to_string();
        assert!(err.contains("empty.txt") && err.contains("no prompts"), "{err}");
        let good = dir.join("good.txt");
        std::fs::write(&good, "Hello\n\nWorld\n").unwrap();
        let w = Cmd::parse_from(["x", "--prompts", good.to_str().unwrap()]).w.apply(Workload::default()).unwrap();
        assert_eq!(w.prompts, PromptSource::Inline { prompts: vec!["Hello".into(), "World".into()] });
    }
}
