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
    /// The prompt's attention as one fused kernel (tensor cores for f16/bf16), instead of
    /// candle's head-split copies, batched matmuls and softmax.
    pub fused_prefill_attention: bool,
    /// Prefill GEMMs with bias, activation and residual in cuBLASLt's epilogue (tuned per shape),
    /// instead of cuBLAS then separate bias kernels.
    pub lt_epilogue: bool,
}

impl Default for KernelOptions {
    fn default() -> Self {
        KernelOptions { decode: DecodePath::Graph, pdl: true, gemv_max_rows: 1, fused_prefill_attention: true, lt_epilogue: true }
    }
}

impl KernelOptions {
    /// The limits a user can break, with what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.gemv_max_rows > GEMV_MAX_ROWS_LIMIT {
            return Err(format!(
                "gemv_max_rows {} is out of range: use 0 (cuBLAS only) to {GEMV_MAX_ROWS_LIMIT}",
                self.gemv_max_rows
            ));
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
        assert_eq!("fused".parse::<DecodePath>().unwrap(), DecodePath::Fused);
        assert!("fast".parse::<DecodePath>().unwrap_err().contains("graph (default), fused or eager"));
    }
}
