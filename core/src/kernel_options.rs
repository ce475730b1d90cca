//! The engine choices of one job: which CUDA kernels run prefill and decode. They used to be
//! process-wide environment variables (`TOKBENCH_DECODE`, `TOKBENCH_PDL`, ...); now they are part
//! of the [`crate::Workload`], so a sweep can compare engine paths side by side and every report
//! records exactly which ran (`InferenceMetrics::kernel_options` as asked, `kernels_run` as run).
//! Defaults are the fastest paths measured (see docs/performance.md). On the CPU they are ignored
//! (and reports record none as run).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Most rows the few-row GEMV kernel takes (its shared-memory layout holds 8 input rows).
pub const GEMV_MAX_ROWS_LIMIT: usize = 8;

/// How greedy decode steps run on CUDA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DecodePath {
    /// tokbench's fused kernels, the whole step captured once per batch as a CUDA graph and replayed.
    #[default]
    Graph,
    /// tokbench's fused kernels, launched one by one every step.
    Fused,
    /// candle's ops, as in any candle model.
    Eager,
}

impl DecodePath {
    pub fn as_str(self) -> &'static str {
        match self {
            DecodePath::Graph => "graph",
            DecodePath::Fused => "fused",
            DecodePath::Eager => "eager",
        }
    }
}

impl fmt::Display for DecodePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DecodePath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "graph" | "cuda-graph" => Ok(DecodePath::Graph),
            "fused" => Ok(DecodePath::Fused),
            "eager" => Ok(DecodePath::Eager),
            other => Err(format!("bad decode path \"{other}\": use graph (default), fused or eager")),
        }
    }
}

/// Per-job CUDA engine options. Each field names one switch; `Default` is today's fastest engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KernelOptions {
    /// How decode steps run.
    pub decode: DecodePath,
    /// Launch the decode kernels with programmatic dependent launch (compute capability 9.0+; on
    /// older GPUs it is off whatever this says, and the report records it off).
    pub pdl: bool,
    /// Rows up to which tokbench's few-row GEMV replaces cuBLAS in decode steps: 0 = cuBLAS
    /// everywhere, at most [`GEMV_MAX_ROWS_LIMIT`]. Default 1: at 8 rows the GEMV is ~2x slower
    /// than cuBLAS on Hopper.
    pub gemv_max_rows: usize,
    /// The prompt's attention as one fused kernel (tensor cores for f16/bf16; the rotary
    /// families' grouped-query one at head sizes 64 and 128), instead of candle's head-split
    /// copies, batched matmuls and softmax.
    pub fused_prefill_attention: bool,
    /// Prefill GEMMs with bias, activation and residual in cuBLASLt's epilogue (tuned per shape),
    /// and the rotary families' SwiGLU (silu(gate) * up) as one kernel, instead of cuBLAS then
    /// separate bias kernels, and candle's silu and product.
    pub lt_epilogue: bool,
    /// Run tokbench's kernels as built for this compute capability (75 = Turing, 80 = Ampere,
    /// 90 = Hopper; ×10, as `CUDA_COMPUTE_CAP` writes it) on a GPU at least that new, to check an
    /// older GPU's code paths on a newer one. None: the device's own. Below 80 there is no bf16;
    /// below 90 no programmatic dependent launch.
    pub compute_cap: Option<u32>,
    /// The rotary families' prefill kernels: the grouped-query prompt attention as one
    /// tensor-core kernel and SwiGLU as one kernel (with `fused_prefill_attention` and
    /// `lt_epilogue` on); on by default since the GPU tests passed with them on the 7.5, 8.0 and
    /// 9.0 paths and they cut llama-3.2-1b's 128-token TTFT by 13–23% (docs/performance.md).
    /// Off: candle's matmuls, softmax and silu · up.
    pub fused_rotary_prefill: bool,
}

impl Default for KernelOptions {
    fn default() -> Self {
        KernelOptions { decode: DecodePath::Graph, pdl: true, gemv_max_rows: 1, fused_prefill_attention: true, lt_epilogue: true, compute_cap: None, fused_rotary_prefill: true }
    }
}

/// The compute capabilities tokbench's kernels are built for (`kernels/decode.cu`, one PTX module
/// each); a GPU runs the newest one not newer than itself.
pub const KERNEL_COMPUTE_CAPS: &[u32] = &[75, 80, 90];

/// The newest of `built` (PTX compute capabilities ×10) that a GPU of capability `target` runs:
/// PTX JIT-compiles for its own and newer GPUs, except an arch-specific 9.0+ build (compute_90a,
/// as candle's build makes it), which runs on its own major version only. None where none does.
/// The rule third_party/candle-kernels applies when it loads; here for reports and `doctor`.
pub fn newest_runnable_ptx(built: &[u32], target: u32) -> Option<u32> {
    built.iter().copied().filter(|&c| c <= target && (c < 90 || c / 10 == target / 10)).max()
}

impl KernelOptions {
    /// These options as they run on a GPU of compute capability `device_cap` (×10): the kernels
    /// of the asked `compute_cap` where the GPU is at least that new, else of the GPU's own (a
    /// GPU between two built capabilities, such as 8.6, runs the older one's, 8.0); programmatic
    /// dependent launch only at 9.0 and newer; the other switches as asked.
    pub fn on_device(&self, device_cap: u32) -> KernelOptions {
        let cap = self.compute_cap.map_or(device_cap, |c| c.min(device_cap));
        let cap = KERNEL_COMPUTE_CAPS.iter().copied().filter(|&c| c <= cap).max().unwrap_or(cap);
        KernelOptions { pdl: self.pdl && cap >= 90, compute_cap: Some(cap), ..*self }
    }

    /// Whether the kernels these options run (after [`Self::on_device`]) do bf16: compute 8.0+.
    pub fn bf16_supported(&self) -> bool {
        self.compute_cap.is_none_or(|c| c >= 80)
    }

    /// The limits a user can break, with what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.gemv_max_rows > GEMV_MAX_ROWS_LIMIT {
            return Err(format!(
                "gemv_max_rows {} is out of range: use 0 (cuBLAS only) to {GEMV_MAX_ROWS_LIMIT}",
                self.gemv_max_rows
            ));
        }
        if let Some(cap) = self.compute_cap {
            if !KERNEL_COMPUTE_CAPS.contains(&cap) {
                return Err(format!(
                    "compute_cap {cap} is not one tokbench's kernels are built for: use one of {}, or leave it unset for the GPU's own",
                    KERNEL_COMPUTE_CAPS.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_fast_path_and_partial_json_fills_in_defaults() {
        let k: KernelOptions = serde_json::from_str(r#"{"decode":"eager"}"#).unwrap();
        assert_eq!(k, KernelOptions { decode: DecodePath::Eager, ..KernelOptions::default() });
        assert_eq!(KernelOptions::default().gemv_max_rows, 1);
        assert!(KernelOptions { gemv_max_rows: 9, ..Default::default() }.validate().unwrap_err().contains("0 (cuBLAS only) to 8"));
        assert!(KernelOptions { compute_cap: Some(86), ..Default::default() }.validate().unwrap_err().contains("use one of 75, 80, 90"));
        assert!(KernelOptions { compute_cap: Some(75), ..Default::default() }.validate().is_ok());
        assert_eq!("fused".parse::<DecodePath>().unwrap(), DecodePath::Fused);
    }

    #[test]
    fn on_device_picks_the_newest_built_capability_the_gpu_and_the_job_allow() {
        let d = KernelOptions::default();
        let h100 = d.on_device(90);
        assert_eq!((h100.compute_cap, h100.pdl, h100.bf16_supported()), (Some(90), true, true));
        let forced_75 = KernelOptions { compute_cap: Some(75), ..d }.on_device(90);
        assert_eq!((forced_75.compute_cap, forced_75.pdl, forced_75.bf16_supported()), (Some(75), false, false));
        let forced_80 = KernelOptions { compute_cap: Some(80), ..d }.on_device(90);
        assert_eq!((forced_80.compute_cap, forced_80.pdl, forced_80.bf16_supported()), (Some(80), false, true));
        // An RTX 3090 (8.6) and an L4 (8.9) run the 8.0 kernels; a T4 (7.5) the 7.5 ones, even if 9.0 is asked.
        assert_eq!(d.on_device(86).compute_cap, Some(80));
        assert_eq!(d.on_device(89).compute_cap, Some(80));
        let t4 = KernelOptions { compute_cap: Some(90), ..d }.on_device(75);
        assert_eq!((t4.compute_cap, t4.pdl), (Some(75), false));
        // Blackwell (10.0, 12.0) runs the 9.0 kernels, with programmatic dependent launch.
        assert_eq!(d.on_device(120).compute_cap, Some(90));
        assert!(d.on_device(100).pdl);
        assert!("fast".parse::<DecodePath>().unwrap_err().contains("graph (default), fused or eager"));
    }

    #[test]
    fn newest_runnable_ptx_skips_newer_and_foreign_arch_specific_builds() {
        let candle = [75, 80, 89, 90];
        assert_eq!(newest_runnable_ptx(&candle, 75), Some(75));
        assert_eq!(newest_runnable_ptx(&candle, 86), Some(80));
        assert_eq!(newest_runnable_ptx(&candle, 89), Some(89));
        assert_eq!(newest_runnable_ptx(&candle, 90), Some(90));
        // compute_90a does not run on Blackwell: it gets the 8.9 PTX.
        assert_eq!(newest_runnable_ptx(&candle, 100), Some(89));
        // A build for Hopper only has nothing a Turing or Ampere GPU runs.
        assert_eq!(newest_runnable_ptx(&[90], 80), None);
        assert_eq!(newest_runnable_ptx(&[], 90), None);
    }
}
